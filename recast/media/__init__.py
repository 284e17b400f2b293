"""recast.media"""
