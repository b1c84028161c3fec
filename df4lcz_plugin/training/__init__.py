"""Training and assessment: training areas, samples, the training loops and recipes, the LCZ Generator's
bootstraps, metrics, the accuracy assessment and its reports."""
