"""Portable log bundles (docs/bundles.md): create, verify, import, transfer (local and gRPC).

manifest (format, member-name safety, metadata), create, verify (one streaming pass, optional
staging of db/ members), importer (staged, all-or-nothing row merge), transfer (local resumable
copy), incoming (server-side resumable uploads), remote (gRPC client for push and pull).
"""
