"""asyncssh, imported without running the C compiler.

At its import asyncssh looks for optional native libraries (libnettle for the umac MACs,
liboqs for post-quantum key exchange) with ``ctypes.util.find_library``. For a name the
loader's cache does not list, that function runs ``gcc``, which runs ``collect2`` and
``ld``, then ``ld`` again: where a compiler is installed, liboqs's two names cost eight
processes and 35 ms at every server start, a ninth of its imports. Here the lookup asks
the loader's cache only (``ldconfig -p``), where the system's packages put the libraries
asyncssh then loads by name. What it no longer finds is a library the cache does not list
(one in ``LD_LIBRARY_PATH`` only): asyncssh then offers the algorithms it has without it.
"""

import ctypes.util

_find_library = ctypes.util.find_library
ctypes.util.find_library = getattr(ctypes.util, "_findSoname_ldconfig", _find_library)
try:
    import asyncssh
finally:
    ctypes.util.find_library = _find_library

__all__ = ["asyncssh"]
