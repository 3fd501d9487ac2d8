"""longseq.core: sequence layers built on the kernels (attention, mixers, packing, blocks, data registry)."""
