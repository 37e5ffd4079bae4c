"""Training through TRL: `pbt sft` and `pbt dpo` (docs/method.md §5)."""
