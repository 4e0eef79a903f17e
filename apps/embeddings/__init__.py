EMBEDDING_DIM = 384  # all-MiniLM-L6-v2's; remote endpoints are asked for this many dimensions
