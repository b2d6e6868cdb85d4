"""Storage of the lake (local folder or S3), its layout and content hashes."""
