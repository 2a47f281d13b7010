"""The data preparation commands: ``prepare_imagenet.py`` (ImageNet resized to short sides,
:mod:`comixup.prepare.imagenet`) and ``load_data.py`` (Tiny-ImageNet's validation set re-laid as
class folders, :mod:`comixup.prepare.tiny_imagenet`)."""
