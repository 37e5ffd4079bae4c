"""The shared model layer: every stage loads tokenizers, models and generators through here.

Nothing outside this package calls `from_pretrained` or decides a dtype, device or pad token.
"""
