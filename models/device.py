"""The torch device names a user may give (`--device`, config files), checked without importing torch.

torch raises a bare RuntimeError deep inside model loading for `--device bogus`; checking the spelling where
the option is parsed makes it a one-line error naming the option and the accepted forms.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

_DEVICE = re.compile(r"(cpu|mps|meta|(cuda|xpu|npu|hpu)(:\d+)?)")


def check_device(name: str) -> str:
    if not _DEVICE.fullmatch(name):
        raise ValueError(f"{name!r} is not a torch device (cpu, cuda, cuda:N, mps, xpu[:N])")
    return name


#: A torch device name: cpu, mps, cuda or cuda:N (also xpu, npu, hpu).
TorchDevice = Annotated[str, AfterValidator(check_device)]
