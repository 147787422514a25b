"""From a score to a decision: calibrated likelihood ratios (:mod:`.calibrate`) and the decision
profile that carries them, with the thresholds, to wherever the model is used (:mod:`.profile`)."""
