"""Training through TRL: `pbt sft` and `pbt dpo` (SPEC.md section 6)."""
