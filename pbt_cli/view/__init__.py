"""`pbt view`: one self-contained HTML page of trees, pairs and evaluation transcripts."""
