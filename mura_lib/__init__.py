"""mura_lib: abnormality detection in musculoskeletal radiographs (Stanford MURA)."""

__version__ = "0.1.0"
