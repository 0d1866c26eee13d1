"""Accounts, API keys, holds, prices, rate limits and the append-only ledger."""
