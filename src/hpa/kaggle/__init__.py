"""Kaggle competition access: ``client`` (credentials, the kaggle package), ``download`` (``hpa download``),
``submit`` (``hpa submit``)."""
