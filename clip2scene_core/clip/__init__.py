"""CLIP side of CLIP2Scene: the MaskCLIP image teacher and the text space.

* ``teacher.py``: MaskCLIP dense pixel features from a frozen open_clip ViT.
* ``feature_cache.py``: precomputed fp16 patch-grid features on disk for real datasets.
* ``text_encoders.py``: the text space (open_clip text tower, or an offline sentence-transformers model).
* ``prompts.py``: the 85 prompt templates, class vocabularies (``config/classes``), class embeddings.
* ``embedding_file.py``: the file ``clip2scene encode-text`` writes.
* ``open_clip_loader.py``, ``offline.py``: open_clip models from local weights only, no network.

Submodules are imported explicitly (``from clip2scene_core.clip.prompts import ...``) so that using
one does not import open_clip or sentence-transformers.
"""
