"""Torch-free inference core: sidecar, preprocessing, classifier, request contract, Lambda handler.

This package is what the Lambda container image copies; nothing in it imports torch.
"""
