"""v4c.runtime: executing a compiled plan.

Will hold the checkpoint loaders, the reference (torch) and Triton executors, the caches,
the sampler, the tokenizer and the generation loop (issue: runtime).
"""
