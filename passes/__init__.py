"""v4c.passes: graph transformations.

Will hold one module per pass (HC/RMSNorm fusion, RoPE folding, MoE dispatch scheduling,
dead-code elimination, memory planning, lowering), the pass manager and the default
pipeline (issue: the IR and passes).
"""
