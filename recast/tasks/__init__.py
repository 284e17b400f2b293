"""recast.tasks"""
