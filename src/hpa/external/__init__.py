"""External training data: the HPAv18 images every top team added to the Kaggle set.

``hpav18`` (label file, server layout, downloaded folders), ``download`` (``hpa download --hpav18``),
``leak`` (``hpa leak-report``), ``demo`` (``hpa demo-data --external N``) and ``loopback`` (a local
HPAv18-like image server for tests and the download throughput measurement). Near-duplicate
grouping across Kaggle train, Kaggle test and HPAv18 lives in :mod:`hpa.data.duplicates`.
"""
