"""Networks and what works on tensors: the MLP G and D, the losses (one class each), the
optimizers, the metrics, and the LeNet feature classifier. Knows no dataset."""
