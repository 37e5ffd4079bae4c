"""pbt: Persuasion-Balanced Training (Stengel-Eskin, Hase, Bansal; NAACL 2025) as one command-line tool."""

__version__ = "0.1.0"
