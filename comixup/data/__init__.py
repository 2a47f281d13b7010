"""Training data: data sets, loaders, the on-device CIFAR loader, the Tiny-ImageNet re-layout, the
ImageNet resize step, and small generated data sets in the real on-disk formats."""
