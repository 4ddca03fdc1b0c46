"""Visual explanations of classifier decisions and meta-explanations over many cells."""
