"""The egress proxy sidecar. Importing it first checks that any compiled per-request modules were
built from the sources beside them (``proxy.native``): a stale build refuses to run."""

from proxy import native as _native

_native.mode()
