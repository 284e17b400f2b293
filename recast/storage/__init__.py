"""recast.storage"""
