"""What the bridge does with a message's attachments: types detected from content, XDM metadata, filing plans."""
