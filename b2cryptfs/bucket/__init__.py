"""The encrypted bucket: paths as object pairs over a Store, blocking, for tools and mount alike.

``layout`` says how plaintext paths become object names, ``pairs`` reads and writes pairs,
``namekey`` finds and keeps a tree's name key, ``factory`` opens the pair store of a session,
``check`` and ``walk`` serve fsck and the recursive tools.
"""
