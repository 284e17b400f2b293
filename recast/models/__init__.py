"""recast.models"""
