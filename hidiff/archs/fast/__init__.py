"""CPU-fast formulations of the textbook blocks: same parameters, same maths up to float rounding.

Chosen by the U-Net option ``fused_attention`` (default True); ``False`` builds
the textbook classes of :mod:`hidiff.archs` instead.  Each class here subclasses
its textbook class (same parameters, keys and initial values) and overrides
``forward`` only:

- :class:`~.mdta.FastMDTA`: Gram matrix from raw q, k divided by their norms,
  attention folded into ``project_out``, q/k/v one after the other;
- :class:`~.gdfn.FastGDFN`: the two gate halves one after the other;
- :class:`~.him.FastHIM`: the query projection folded into the keys and the
  output projection into the values (no Q map);
- :class:`~.transformer_block.FastTransformerBlock` and
  :class:`~.basic_layer.FastBasicLayer`: residuals accumulated in place without
  autograd (a block then holds about two full-size maps).

Without autograd, on the CPU, MDTA and GDFN also work through row stripes (HIM
through pixel chunks) of at most ``inference_chunk_pixels`` pixels
(:mod:`.stripes`), normalising and FiLM-ing their input stripe by stripe; every
block works on either memory format but is fastest on ``channels_last`` maps.
The prior-side linears (HIM keys, FiLM) and the attention reductions run one
sample at a time at inference, so a tile's output depends on the tile batch only
by float rounding (the image-sized layers still run batched); it is bitwise
reproducible with one tile per call (:mod:`hidiff.archs.sample_wise`).

Every class has a ``fused`` switch (True); False runs the inherited textbook
``forward`` (the profiler's reference formulation uses it).
tests/test_speed_paths.py binds each class to its textbook class.
"""
