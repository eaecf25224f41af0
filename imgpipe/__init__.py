"""Shared building blocks of the image pipeline: params, image standardizing, shards, manifests.

Stages import from here and never from each other.
"""
