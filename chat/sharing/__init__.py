"""Share links (``/s/<token>/``): a read-only view of one comparison run or one conversation
for anyone holding the link, without an account, until its owner revokes it or it expires."""
