"""b2cryptfs: client-side encrypted FUSE filesystem for Backblaze B2."""

__version__ = "0.1.0"
