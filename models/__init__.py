"""The published import path ``models``: ``models.preactresnet18(num_classes, dropout, stride)`` and
``models.__dict__[arch]`` work as in the published repository. The models live in
:mod:`comixup.models`."""
from comixup.models import *  # noqa: F401,F403
from comixup.models import DEFAULT_INITIAL_CHANNELS, MODELS, TORCHVISION_RESNETS, WIDTH_ARCHS, __all__  # noqa: F401
