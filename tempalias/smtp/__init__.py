"""The SMTP proxy: accepts mail for live aliases and hands it to the smarthost (or a Maildir).

``server`` accepts connections, ``protocol`` speaks SMTP over a ``connection``, ``forwarder``
decides about recipients and uses, ``relay`` and ``maildir`` deliver, ``replies`` names every reply.
"""
