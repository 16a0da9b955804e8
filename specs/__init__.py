"""v4c.specs: the model specs shipped with v4c (flash.yaml, pro.yaml, tiny.yaml, variants/)."""
