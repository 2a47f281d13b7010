"""Training data: data sets, loaders, the on-device CIFAR loader, the CIFAR-C release, and small
generated data sets in the real on-disk formats."""
