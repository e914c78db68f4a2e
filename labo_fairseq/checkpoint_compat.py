"""Lets torch >= 2.6's weights-only ``torch.load`` read fairseq checkpoints.

fairseq 0.12 stores its configuration in checkpoints as an ``argparse.Namespace`` (``args``)
and an omegaconf ``DictConfig`` (``cfg``), and calls ``torch.load`` without ``weights_only``,
which torch >= 2.6 now defaults to True. Instead of switching safe loading off, we allowlist
exactly the container and node types those two objects are made of.
"""
import argparse
import typing

import torch


def fairseq_checkpoint_types() -> list:
    """The non-tensor classes a fairseq 0.12 checkpoint pickles (config objects only).

    Checkpoints written by 0.12 hold ``argparse.Namespace`` (found by
    ``torch.serialization.get_unsafe_globals_in_checkpoint``); checkpoints converted from older
    releases or saved through hydra can hold the omegaconf objects as well.
    """
    from omegaconf import base, dictconfig, listconfig, nodes

    return [
        argparse.Namespace,  # ``args`` of every 0.12 checkpoint (None-valued or legacy)
        typing.Any,  # omegaconf metadata's ref_type/key_type
        dictconfig.DictConfig,
        listconfig.ListConfig,
        base.ContainerMetadata,
        base.Metadata,
        nodes.AnyNode,
        nodes.BooleanNode,
        nodes.EnumNode,
        nodes.FloatNode,
        nodes.IntegerNode,
        nodes.StringNode,
        nodes.BytesNode,
        nodes.PathNode,
        nodes.ValueNode,
    ]


def allowlist_fairseq_checkpoint_types() -> None:
    """Registers :func:`fairseq_checkpoint_types` with torch's weights-only unpickler."""
    add_safe_globals = getattr(torch.serialization, "add_safe_globals", None)
    if add_safe_globals is not None:  # torch < 2.4 loads everything and needs nothing
        add_safe_globals(fairseq_checkpoint_types())
