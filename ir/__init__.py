"""v4c.ir: the intermediate representation.

Will hold the op registry (attributes, shape rules, reference semantics in torch), the
`Graph` on networkx, the builder from a `ModelSpec`, the printer/parser, the verifier and
the `Plan` that the last pass produces (issue: the IR and passes).
"""
