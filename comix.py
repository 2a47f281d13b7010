"""The published module ``comix``: Co-Mixup's functions under their published names and signatures.

``get_onehot_matrix``, ``mix_input``, ``obj_fn``, ``obj_fn_thres``, ``mixup_process``,
``to_one_hot`` and ``distance`` behave as in the published repository; :class:`CoMixup` is the
callable for new code. Everything lives in :mod:`comixup.mixing.comix`.
"""
from comixup.mixing.comix import *  # noqa: F401,F403
from comixup.mixing.comix import __all__  # noqa: F401
