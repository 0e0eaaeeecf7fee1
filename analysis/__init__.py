"""Cross-setting analysis of sweep results: which α, p_inv, λ, σ hold up across datasets.

Pure functions on the Parquet results (`analysis.load`) and on tidy validation tables
(`analysis.robust`). Selection only ever reads validation metrics.
"""
