"""What training and serving share: model artifacts, the week's slots, feature references.

Imported by both ``training`` and ``service``, importing neither, so each side can change
without reaching into the other.
"""
