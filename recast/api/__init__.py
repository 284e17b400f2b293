"""recast.api"""
