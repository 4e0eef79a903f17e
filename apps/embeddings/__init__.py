EMBEDDING_DIM = 384  # all-MiniLM-L6-v2's; remote endpoints are asked for this many dimensions
STATIC_DIM = 256  # the static first stage (apps.embeddings.static): 256 principal axes of the vocabulary
