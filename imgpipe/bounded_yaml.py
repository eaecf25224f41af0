"""YAML read with bounds, so a hostile params file fails in milliseconds instead of minutes.

``yaml.safe_load`` builds an alias once and shares it, so a "billion laughs" file (each
anchor a list of ten aliases of the one before) loads quickly, but anything that then walks
the result (our validator, a comparison, a JSON dump) visits every one of the 10^9 shared
leaves. The document is therefore composed first, its expanded size counted on the node graph
(each shared node counted once per use, without expanding it), and only a document within
bounds is turned into Python objects. A node that contains itself is refused as well.
"""

from __future__ import annotations

from typing import Any

import yaml

from imgpipe.errors import ParamsError

# A params.yaml is a few kB; the longest real ones (layer lists) hold a few hundred values.
MAX_BYTES = 1024**2
MAX_NODES = 100_000


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def expanded_size(root: yaml.Node, source: str, limit: int = MAX_NODES) -> int:
    """How many values ``root`` holds with every alias written out; ParamsError past ``limit``."""
    sizes: dict[int, int] = {}
    # Depth first without recursion: (node, children already counted?)
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    open_nodes: set[int] = set()
    while stack:
        node, counted = stack.pop()
        key = id(node)
        if counted:
            open_nodes.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in _children(node))
            if sizes[key] > limit:
                raise ParamsError(
                    f"{source} expands to more than {limit:,} values through YAML aliases "
                    "(*name); write the values out, or use fewer aliases"
                )
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise ParamsError(f"{source}: a YAML anchor (&name) contains an alias of itself")
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)
    return sizes[id(root)]


def load(text: str, source: str) -> Any:
    """The one document in ``text``, as ``yaml.safe_load`` gives it, or ParamsError."""
    if len(text.encode("utf-8")) > MAX_BYTES:
        raise ParamsError(f"{source} is over {MAX_BYTES // 1024} kB; a params file is a few kB")
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        expanded_size(node, source)
        return loader.construct_document(node)
    finally:
        loader.dispose()
