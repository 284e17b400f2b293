"""recast.db"""
