"""Firewall rulesets as netdiag reads them, below both the snapshot model and reasoning (which
evaluates them): nft rule text for people (nft_text), iptables-save text parsed (iptables_save),
one iptables rule's xt parts as native nft expressions (xt_translate), and Docker's iptables-nft
chains translated whole into ordinary nft JSON (iptables_nft: ruleset_for). Pure: imports only
the standard library, nothing else of netdiag."""
