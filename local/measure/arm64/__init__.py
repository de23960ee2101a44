"""arm64 proven offline: the exported models on ONNX Runtime's aarch64 kernels, under qemu's emulation.

``rootfs`` builds the emulated machine's files (Debian's arm64 Python, the lock's aarch64 wheels),
``qemu`` runs its Python under the emulator, ``guest`` is what runs there (the torch-free core only),
and ``check`` compares with this x86 machine (``python -m local arm64check``). A correctness check:
emulated code runs tens of times slower than a real arm64 CPU, so nothing here is a timing.
"""

from local.measure.arm64.check import Arm64Config, Arm64Result, Check, run_check

__all__ = ["Arm64Config", "Arm64Result", "Check", "run_check"]
