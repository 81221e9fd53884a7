"""open_clip as a reference, imported from its unpacked source (refs.open_clip_root()).

open_clip's package import pulls in torchvision (image transforms), which cannot load beside the CPU torch wheel
here. The text tower needs none of it, so a stand-in `torchvision` is put in sys.modules for the duration of the
import only, then removed, so other libraries never see it.
"""

from __future__ import annotations

import importlib.machinery
import sys
import types

from . import refs

_module = None


class _Anything(type):
    def __getattr__(cls, name):
        return cls

    def __call__(cls, *args, **kwargs):
        return cls


class _Stub(metaclass=_Anything):
    pass


def _stub_module(name: str) -> types.ModuleType:
    mod = types.ModuleType(name)
    def getattr_(attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Stub

    mod.__getattr__ = getattr_  # type: ignore[attr-defined]
    mod.__path__ = []  # a package, so submodules resolve
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
    return mod


def open_clip():
    global _module
    if _module is not None:
        return _module
    root = str(refs.open_clip_root())
    # Libraries that probe for torchvision must do so before the stand-in exists (open_clip imports transformers).
    import transformers  # noqa: F401
    from transformers import CLIPTextModel  # noqa: F401
    names = ["torchvision", "torchvision.transforms", "torchvision.transforms.functional", "torchvision.ops",
             "torchvision.ops.misc", "torchvision.transforms.v2"]
    saved = {n: sys.modules.get(n) for n in names}
    for n in names:
        sys.modules[n] = _stub_module(n)
    sys.path.insert(0, root)
    try:
        import open_clip as oc
    finally:
        sys.path.remove(root)
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m
    _module = oc
    return oc
