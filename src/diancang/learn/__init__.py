"""The learner: one training loop over the steps of a task stream."""
