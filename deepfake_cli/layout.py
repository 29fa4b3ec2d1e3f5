"""The on-disk layout of extracted data, shared by `extract` and the readers (no heavy imports).

FaceForensics++'s: `OUT/<folder>/<video>_<i>.jpg|.npy`, where `original` holds the real videos
and every other folder is a manipulation method.
"""

REAL_FOLDERS = ("original",)
META_DIR = ".deepfake"  # OUT/.deepfake/: extract's settings (extract.json) and manifests
