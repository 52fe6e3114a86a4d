"""Multi-task and adversarial transfer: auxiliary tasks (NER or word segmentation) beside the
main tagger, their batch schedule, and the gradient reversal of adversarial sharing."""
