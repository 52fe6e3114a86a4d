"""Continued masked-language-model training of an encoder on raw domain text (``diancang
pretrain``) and its pieces, shared with the ``adapt`` strategy: raw text readers, masking modes
(token, whole-word, entity) and an MLM head tied to the input embeddings."""
